"""Value types and rules shared by the API and lake layers (imports nothing of the project)."""
