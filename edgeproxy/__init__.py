"""edgeproxy: a Twisted caching reverse proxy that serves and renders images at the edge."""
