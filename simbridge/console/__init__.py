"""The browser console served at /console: static files shipped in the package."""
