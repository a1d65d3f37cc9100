"""Pure decision rules: no sockets, files, environment or clock."""
