//! Layout files checked with real tools: xmllint, qpdf, pdftotext, pdfdetach, pdftoppm + zbarimg,
//! pdffonts, and OpenSSL for the XML signature.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail loudly on unexpected errors"
)]

mod files;
mod fixtures;
mod layout;
mod ofd;
