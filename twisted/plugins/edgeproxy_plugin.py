from twisted.application.service import ServiceMaker

edgeproxy = ServiceMaker("edgeproxy", "edgeproxy.tap", "A caching reverse proxy that serves images at the edge.", "edgeproxy")
