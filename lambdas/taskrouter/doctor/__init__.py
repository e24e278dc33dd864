"""`taskrouter doctor --stage STAGE`: a preflight of a stage's AWS account, before its first deploy and
whenever one fails (docs/doctor.md). A tool: never imported by a handler, never in the Lambda bundle."""
