"""Layer 5: the wiring of ``nvr serve``, started in order and stopped in reverse."""
