"""IO-side helpers that are not transports: scripted user agents, process runners."""
