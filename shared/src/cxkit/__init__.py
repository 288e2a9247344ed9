"""cxkit: the parts crm-service and cem-service share, and nothing service-specific."""
