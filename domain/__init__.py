"""Pure domain: entities, services, events and the Protocols storage implements."""
