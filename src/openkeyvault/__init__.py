"""OpenKeyVault: a self-hosted key management service speaking the Azure Key Vault REST API."""

__version__ = "0.1.0"
