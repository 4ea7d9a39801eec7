"""Configuration: one TOML file, environment overrides, secrets by reference (DESIGN 5.4)."""

from gateway.config.loader import load_settings
from gateway.config.settings import Settings, TenantSettings

__all__ = ["Settings", "TenantSettings", "load_settings"]
