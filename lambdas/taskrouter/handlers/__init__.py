"""Lambda entry points: each one thin (event in, core call, response out)."""
