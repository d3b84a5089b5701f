"""The one authenticated endpoint of the test API."""
from rest_framework.response import Response
from rest_framework.views import APIView


class TownList(APIView):
    """Lists towns to any authenticated user."""

    def get(self, request):
        return Response({"user": request.user.get_username(), "towns": ["iribala", "kel"]})
