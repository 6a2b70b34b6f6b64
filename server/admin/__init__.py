"""What each node does for the admin API: its part of cluster-wide requests, its numbers."""
