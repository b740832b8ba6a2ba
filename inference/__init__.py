"""Using a trained bridge: loading a run or checkpoint, chat, predict, nearest vocabulary tokens."""
