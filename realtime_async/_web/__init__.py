"""What the pages show: the display rules the server and the browser share."""
