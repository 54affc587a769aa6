"""What happens to access and data over time: revocation at a project's end."""
