"""crm-service: the company's view of the customer."""

__version__ = "1.0.0"
