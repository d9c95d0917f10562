"""What runs on a host, per technology: discovery, monitors and their parsers, command builders."""
