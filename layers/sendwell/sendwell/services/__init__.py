"""Domain services: what sendwell does, written against ports, never against boto3 or HTTP."""
