"""Who may call what: TLS, principals from tokens or client certificates, roles, queue scopes."""
