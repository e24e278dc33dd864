"""TaskRouter runtime: the routing core, its AWS/OpenAI adapters and the Lambda handlers."""
