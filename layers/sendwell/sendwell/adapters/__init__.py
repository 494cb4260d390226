"""Adapters: the outside world (AWS services, mail providers) behind the ports."""
