"""Local stand-ins for the outside services sendwell talks to (used by tests, benchmarks and the demo)."""
