"""cem-service: the customer's view of the company."""

__version__ = "1.0.0"
