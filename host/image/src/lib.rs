//! OCI image store, registry client, archives and guest-ready layer images
