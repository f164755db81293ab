"""The API describing itself: route tables that record their models, the OpenAPI document built from
them, the request and response models, example bodies, and Swagger UI."""
