"""API tests over real HTTP and a real database, without Asterisk."""
