"""The contact book: one contact per phone number across every blast, its import, and its timeline."""
