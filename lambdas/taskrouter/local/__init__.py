"""Local mode (`make local`): the Lambda handlers behind a loopback HTTP server. Not bundled."""
