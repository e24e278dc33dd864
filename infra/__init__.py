"""CDK code of TaskRouter: one module per logical component, plus the typed stage configuration."""
