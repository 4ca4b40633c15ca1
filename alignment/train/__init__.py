"""Training loops (sft, preference model, offline, online) and what they share."""
