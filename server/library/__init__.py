"""LibraryService: entitlements (owned games), product cache, categories, hiding, install status, wishlist."""
