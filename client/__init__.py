"""waiter-client: drive the Waiter SOAP service from a terminal, as the workflow manager would."""
