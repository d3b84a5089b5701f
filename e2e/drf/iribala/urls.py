"""Routes: SimpleJWT's obtain-pair and refresh views, DRF's obtain-token
view, and the authenticated towns endpoint."""
from django.urls import path
from rest_framework.authtoken.views import obtain_auth_token
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from towns.views import TownList

urlpatterns = [
    path("api/token/", TokenObtainPairView.as_view()),
    path("api/token/refresh/", TokenRefreshView.as_view()),
    path("api/api-token-auth/", obtain_auth_token),
    path("api/towns/", TownList.as_view()),
]
