"""`taskrouter review`: a page on loopback to review labelled datasets; never in a Lambda."""
