"""Adapter training (`taskrouter adapter train`); never in a Lambda, never on synth's import path."""
