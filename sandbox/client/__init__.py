"""What a handler may import to reach the platform from inside its
execution environment: ``from sandbox.client import platform``."""
