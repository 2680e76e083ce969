"""astrai.cache — see the package README."""

__all__: list[str] = []
