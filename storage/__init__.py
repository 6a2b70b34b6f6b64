"""SQLAlchemy 2 async persistence: engine, repositories, Alembic migrations."""
