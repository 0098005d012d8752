"""The web dashboard: pages, actions and live updates over the same core as the RPCs."""
