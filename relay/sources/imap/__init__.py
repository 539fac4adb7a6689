"""IMAP source: one IDLE listener per watched folder, and the sink that stores what they see."""
