"""sendwell: cold-email sequences that survive an inbox losing its connection."""
