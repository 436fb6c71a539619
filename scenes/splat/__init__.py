"""Gaussian-splat appearance: Gaussian sets, 3DGS PLY IO, surface sampling and the rasteriser.

Imports torch (not gsplat, Genesis or open3d); `scenes` itself does not import this package.
"""
