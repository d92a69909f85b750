"""The status page: its HTML, CSS and JavaScript, and the routes that serve them."""
