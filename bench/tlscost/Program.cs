using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
#if WITH_BC
using Org.BouncyCastle.Security;
using Org.BouncyCastle.Tls;
using Org.BouncyCastle.Tls.Crypto.Impl.BC;
#endif

// Connects to an NBD server, STARTTLS (with BC) or not, then NBD_OPT_ABORT; prints its memory.
var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
socket.Connect(IPEndPoint.Parse(args[0]));
Stream stream = new NetworkStream(socket);
var greeting = new byte[18];
stream.ReadExactly(greeting);
stream.Write(new byte[] { 0, 0, 0, 3 });
#if WITH_BC
var option = new byte[16];
BinaryPrimitives.WriteUInt64BigEndian(option, 0x49484156454F5054);
BinaryPrimitives.WriteUInt32BigEndian(option.AsSpan(8), 5);
stream.Write(option);
var reply = new byte[20];
stream.ReadExactly(reply);
var protocol = new TlsClientProtocol(stream);
var client = new Client();
protocol.Connect(client);
stream = protocol.Stream;
var secret = client.Context.SecurityParameters.TrafficSecretClient;
Console.WriteLine($"BC handshake done: {client.Context.ServerVersion}, client traffic secret {(secret is null ? "not exposed" : secret.Extract().Length + " bytes")}");
#endif
var abort = new byte[16];
BinaryPrimitives.WriteUInt64BigEndian(abort, 0x49484156454F5054);
BinaryPrimitives.WriteUInt32BigEndian(abort.AsSpan(8), 2);
stream.Write(abort);
var status = File.ReadAllLines("/proc/self/status");
Console.WriteLine(string.Join("; ", status.Where(l => l.StartsWith("VmRSS") || l.StartsWith("RssAnon") || l.StartsWith("RssFile") || l.StartsWith("VmHWM"))));

#if WITH_BC
sealed class Client() : DefaultTlsClient(new BcTlsCrypto(new SecureRandom()))
{
    public TlsClientContext Context => m_context;
    protected override ProtocolVersion[] GetSupportedVersions() => ProtocolVersion.TLSv13.Only();
    public override TlsAuthentication GetAuthentication() => new Authentication();
}

sealed class Authentication : TlsAuthentication
{
    // Measures size and memory only: a real client would check the chain to the site CA here.
    public void NotifyServerCertificate(TlsServerCertificate serverCertificate) { }
    public TlsCredentials? GetClientCredentials(CertificateRequest certificateRequest) => null;
}
#endif
