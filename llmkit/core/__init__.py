"""The core layer: messages and results, options, configuration, tools, images, structured
output, stop sequences and the error tree. It imports nothing else of llmkit."""
