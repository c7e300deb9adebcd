"""The OpenID Connect provider's domain: signing keys, client apps, grants and claims."""
