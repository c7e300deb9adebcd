"""The service layer shared by the admin API and the admin pages."""
