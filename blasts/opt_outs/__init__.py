"""The opt-out list: numbers that asked not to be messaged, where each came from, kept by hand too."""
