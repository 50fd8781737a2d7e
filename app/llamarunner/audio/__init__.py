"""Speech to text: the Whisper worker program and the pure pieces it is built from."""
