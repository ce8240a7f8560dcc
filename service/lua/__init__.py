"""Lua scripts run inside Redis. Each file's header lists its KEYS, ARGV and reply."""
