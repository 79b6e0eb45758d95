"""HTTP views served by Faust's web server (aiohttp)."""
