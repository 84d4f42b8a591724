"""What a training is: its options, its starting weights and the run that trains and registers a model."""
