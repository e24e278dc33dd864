"""Adapters between the routing core and the outside: DynamoDB, SageMaker, OpenAI, settings."""
