"""Tasks the api runs beside serving requests, started and stopped with the application."""
